"""Print medstream's alerts as they arrive, with medstream's typed client.

    python examples/print_alerts.py [--max N] [--idle SECONDS] [--group GROUP] [--notifications]

Reads medication-reminders, refill-alerts and interaction-warnings in the downstream consumer
group (the settings' app id plus "-downstream", unless --group is given), with the brokers,
security and topic prefix of the MEDSTREAM_* environment (docs/client.md). Prints one line per
alert (its type, event_id and what it is about; no patient id), and commits each alert's offset
once its line is printed. Stops after --max alerts or --idle seconds without one.
"""

from __future__ import annotations

import argparse
import asyncio

from streams.client import Alert, Subscriber
from streams.contracts.models import (
    DoseMissed,
    InteractionWarning,
    NotificationOutcome,
    RefillAlert,
    ReminderDue,
)
from streams.settings import Settings


def describe(alert: Alert) -> str:
    """One line for an alert."""
    if isinstance(alert, RefillAlert):
        detail = f"{alert.reason} supply={alert.supply_quantity:g}"
    elif isinstance(alert, InteractionWarning):
        detail = f"{alert.severity} between {' and '.join(alert.medication_ids)}"
    elif isinstance(alert, ReminderDue | DoseMissed):
        detail = f"for {alert.scheduled_for.isoformat()}"
    elif isinstance(alert, NotificationOutcome):
        detail = f"{alert.status} on {alert.channel}"
    else:
        detail = ""
    return f"{alert.event_type} {alert.event_id} {detail}".rstrip()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max", type=int, default=None, help="stop after this many alerts")
    parser.add_argument("--idle", type=float, default=None, help="stop after this many idle s")
    parser.add_argument("--group", default=None, help="the consumer group (default: downstream)")
    parser.add_argument("--notifications", action="store_true", help="notifications too")
    options = parser.parse_args()

    printed = 0
    subscriber = Subscriber(
        Settings(),
        group_id=options.group,
        notifications=options.notifications,
        idle_timeout=options.idle,
    )
    async with subscriber:
        async for alert in subscriber:
            print(describe(alert), flush=True)
            printed += 1
            if options.max is not None and printed >= options.max:
                break  # leaving the block without an error commits this last alert too


if __name__ == "__main__":
    asyncio.run(main())
