"""Identities from NATS's own machinery (an operator, an account whose scoped signing keys hold each role's
permissions, users signed by those keys), their files on disk, per-job identities minted at dispatch, and
optional signing of job and call payloads. docs/security.md has the model."""
