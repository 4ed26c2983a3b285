"""What runs the pipeline's processes: the command line, the Prefect server launcher, the lost-server guard."""
