"""How every process of a run writes a log record: the coordinator, its agents, their forkers and Ms
(into the run's gmpsim.log, or an agent on its own's stderr)."""

LOG_FORMAT = "%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"
