"""Running a base: for now, the one decision of device and precision (`credo.runtime.precision`)."""
