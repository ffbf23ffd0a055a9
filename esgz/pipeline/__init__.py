"""The pipeline framework: config model, events, job types and the stage runner."""
