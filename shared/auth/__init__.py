"""Who may do what on the bus: NATS decentralized authentication (operator → accounts → users).

`tokens` encodes the JWTs and credentials files, `permissions` says (as pure functions) what each
role may publish and subscribe, `authority` holds the signing keys on disk and issues and revokes
credentials, `identities` records who was enrolled. docs/SECURITY.md is the threat model.
"""
