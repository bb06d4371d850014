"""Running a whole job: the local threaded pipeline and the Ray Data engine."""
