"""A consumer process for the SIGKILL test: takes deliveries and never acks them.

Usage: python _killable_consumer.py AMQP_URL QUEUE CONNECTION_NAME PREFETCH
Prints one line per delivery (the payload), then hangs until killed.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from rtkit.messaging import MessageConsumer


async def main(url: str, queue: str, name: str, prefetch: int) -> None:
    consumer = MessageConsumer.from_url(url, connection_name=name)

    async def hang(payload: Any) -> None:
        sys.stdout.write(f"{payload}\n")
        sys.stdout.flush()
        await asyncio.sleep(3600)

    await consumer.consume(queue, hang, prefetch=prefetch)
    await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
