"""The core layer: errors, configuration, alerts and findings; imports no other layer."""
