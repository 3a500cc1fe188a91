"""NATS plumbing shared by every component: connecting, JetStream assets, request/reply with typed errors, blobs."""
