"""Steps ``prefect deploy`` runs from prefect.yaml's ``build`` section (a step is any
importable function; what it returns is templated into the deployments)."""

import sys


def interpreter() -> dict[str, str]:
    """The Python that runs ``prefect deploy``: the project's environment (``make
    deploy`` runs the environment's own ``prefect``). prefect.yaml's job variables
    start each flow run with it, running Prefect's engine (``prefect.engine`` as
    ``__main__``) in a session of its own, in one process: a process worker without a
    command starts a workspace supervisor first, a second Python process importing
    Prefect (1.3-1.5 s before every run, and before every answered form of a
    suspended run)."""
    return {"python": sys.executable}
