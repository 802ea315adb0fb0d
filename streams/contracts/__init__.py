"""The public event contract: Avro schemas, typed models, codecs and their validation."""
