// Creates the ACLs read from standard input, one a line: principal, resource type (TOPIC or
// GROUP), resource name, operation and, optionally, pattern type (LITERAL, the default, or
// PREFIXED), tab-separated; Allow, any host.
// Run with the Kafka jars on the class path: java -cp 'libs/*' CreateAcls.java client.properties
// (aiokafka has no CreateAcls request and Kafka 4's jars on our class path have no AclCommand).
import java.io.BufferedReader;
import java.io.FileInputStream;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.common.acl.AccessControlEntry;
import org.apache.kafka.common.acl.AclBinding;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.acl.AclPermissionType;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourceType;

public class CreateAcls {
    public static void main(String[] args) throws Exception {
        Properties properties = new Properties();
        try (FileInputStream in = new FileInputStream(args[0])) {
            properties.load(in);
        }
        List<AclBinding> bindings = new ArrayList<>();
        BufferedReader reader =
                new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        for (String line = reader.readLine(); line != null; line = reader.readLine()) {
            if (line.isBlank()) {
                continue;
            }
            String[] f = line.split("\t");
            bindings.add(new AclBinding(
                    new ResourcePattern(
                            ResourceType.fromString(f[1]),
                            f[2],
                            f.length > 4 ? PatternType.fromString(f[4]) : PatternType.LITERAL),
                    new AccessControlEntry(
                            f[0], "*", AclOperation.fromString(f[3]), AclPermissionType.ALLOW)));
        }
        try (Admin admin = Admin.create(properties)) {
            admin.createAcls(bindings).all().get();
        }
        System.out.println("created " + bindings.size() + " ACLs");
    }
}
