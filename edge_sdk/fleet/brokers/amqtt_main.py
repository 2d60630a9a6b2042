"""Run amqtt (the embedded broker's child process) with a clean shutdown on SIGINT or SIGTERM.

``python -m edge_sdk.fleet.brokers.amqtt_main -c CONFIG`` replaces amqtt's own
``broker_script``, which shuts down cleanly only when SIGINT surfaces as a
``KeyboardInterrupt`` out of its event loop: a SIGINT that lands while amqtt's
code is running can be swallowed there, leaving the broker up until
:meth:`~edge_sdk.fleet.brokers.process.BrokerProcess.stop` SIGKILLs it (seen
once in a full test run under load: no "Shutting down broker" in its log).
Here the signals are event-loop handlers, so the shutdown always runs. A failed
start (port in use) exits at once with status 1, after amqtt logged why.
The log format is amqtt's own, which :class:`EmbeddedBroker` reads.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from typing import Any


async def _serve(config: dict[str, Any]) -> int:
    from amqtt.broker import Broker
    from amqtt.errors import BrokerError

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    broker = Broker(config, loop=loop)
    try:
        await broker.start()
    except BrokerError:
        return 1  # amqtt logged "Broker startup failed" with the reason
    await stop.wait()
    await broker.shutdown()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGINT or SIGTERM; the exit status is 0 after a clean shutdown."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", dest="config", required=True, help="amqtt YAML config file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] :: %(levelname)s - %(message)s")
    logging.getLogger("transitions").setLevel(logging.WARNING)
    from amqtt.utils import read_yaml_config

    return asyncio.run(_serve(read_yaml_config(args.config)))


if __name__ == "__main__":
    raise SystemExit(main())
