"""Pure, typed medication-safety logic: no Kafka, no Faust, no I/O beyond reading data files."""
