"""``watchdog demo``: the daemon against simulated app instances, on one machine, in a minute.

:class:`SimulatedApp` is also what integration tests use as a real exporter with a known truth.
"""

from watchdog.demo.simapp import SimulatedApp, Traffic

__all__ = ["SimulatedApp", "Traffic"]
