"""The embedded one-machine stack: real nats-server and S3 server processes plus every service."""
