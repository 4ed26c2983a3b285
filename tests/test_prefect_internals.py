"""The Prefect internals runtime/prefect_internals.py relies on are still there.

Fails when the installed Prefect is not the version the module was checked against,
or no longer has what it replaces or reads: then read that Prefect's
``client/base.py`` and ``_internal/concurrency/services.py`` again, adapt the module
and its ``CHECKED_VERSION``.
"""

import inspect
import logging
import threading
import time

import anyio
import prefect
import prefect._internal.concurrency as concurrency
import prefect._internal.concurrency.services as services
import prefect.client.base as client_base
import prefect.events.clients as events_clients
from prefect.events.worker import EventsWorker
from prefect.logging.handlers import APILogWorker

from runtime import prefect_internals


def test_the_installed_prefect_is_the_checked_version():
    assert prefect.__version__ == prefect_internals.CHECKED_VERSION, (
        f"runtime/prefect_internals.py was checked against prefect {prefect_internals.CHECKED_VERSION}, "
        f"installed is {prefect.__version__}: check what it relies on in the new version"
    )


def test_the_clients_sleep_between_retries_through_the_names_that_are_replaced():
    assert client_base.time is time and client_base.anyio is anyio
    sync_retry = inspect.getsource(client_base.PrefectHttpxSyncClient._send_with_retry)
    async_retry = inspect.getsource(client_base.PrefectHttpxAsyncClient._send_with_retry)
    assert "time.sleep(retry_seconds)" in sync_retry
    assert "await anyio.sleep(retry_seconds)" in async_retry
    calls = []
    with prefect_internals.client_retry_sleeps(calls.append, None):
        client_base.time.sleep(7.0)
        assert client_base.time.monotonic() > 0  # the rest of the module is the real one
    assert calls == [7.0] and client_base.time is time and client_base.anyio is anyio


def test_a_refused_connection_is_retried_only_on_a_client_that_has_connected():
    for cls in (client_base.PrefectHttpxSyncClient, client_base.PrefectHttpxAsyncClient):
        send = inspect.getsource(cls.send)
        assert (
            "if self._has_connected:\n            retry_exceptions = retry_exceptions + (httpx.ConnectError,)" in send
        )
        assert cls(base_url="http://127.0.0.1:9/api")._has_connected is False
        with prefect_internals.clients_count_as_connected():
            assert cls(base_url="http://127.0.0.1:9/api")._has_connected is True
        assert cls(base_url="http://127.0.0.1:9/api")._has_connected is False, "not restored"


def test_prefects_delivery_workers_drain_at_exit_through_register_atexit_and_log_under_known_names():
    assert callable(threading._register_atexit)
    assert "threading._register_atexit(self._at_exit)" in inspect.getsource(services._QueueServiceBase.start)
    assert issubclass(EventsWorker, services.QueueService) and issubclass(APILogWorker, services.QueueService)
    assert 'logging.getLogger(f"{type(self).__name__}")' in inspect.getsource(services._QueueServiceBase.__init__)
    assert concurrency.logger.name == prefect_internals.DELIVERY_LOGGERS[0]
    assert {"EventsWorker", "APILogWorker"} <= set(prefect_internals.DELIVERY_LOGGERS)
    assert logging.getLogger("prefect.events.clients") is events_clients.logger
