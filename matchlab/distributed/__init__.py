"""Running the stages on more than one machine (see docs/usage.md, "On a cluster")."""
