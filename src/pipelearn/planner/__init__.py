"""The planner: profile a model, simulate a run's schedule from the profile, and search each device's split and
micro-batch count for the shortest predicted epoch of the whole fleet."""
