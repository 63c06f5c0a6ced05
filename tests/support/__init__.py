"""Helpers shared by test suites: real servers to test against, started and cleaned up."""
