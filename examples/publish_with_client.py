"""Publish one patient's medication story with medstream's typed client.

    python examples/publish_with_client.py [PATIENT_ID]

The brokers, security and topic prefix come from the MEDSTREAM_* environment, as for a worker
(docs/client.md). A schedule twice a day, a prescription of 12 tablets with a refill threshold
of 5 days, then three doses taken: a worker answers with a LOW_SUPPLY refill alert. Every call
is keyed by this script's own ids for the facts, so running it twice publishes the same
event_ids again and the worker ignores the repeats. Prints one line per acknowledged event.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime, timedelta

from streams.client import Publisher
from streams.settings import Settings


async def main(patient_id: str) -> None:
    settings = Settings()
    async with Publisher(settings) as publisher:
        published = [
            await publisher.set_schedule(
                key="schedule-1",
                patient_id=patient_id,
                medication_id="metformin",
                timezone="UTC",
                times_of_day=["08:00", "20:00"],
            ),
            await publisher.prescribe(
                key="prescription-1",
                patient_id=patient_id,
                medication_id="metformin",
                name="Metformin 500 mg",
                dose_quantity=1,
                dose_unit="tablet",
                supply_quantity=12,
                refills_remaining=1,
                refill_threshold_days=5,
            ),
        ]
        now = datetime.now(UTC)
        for number in range(3):
            published.append(
                await publisher.dose_taken(
                    key=f"dose-confirmation-{number}",
                    patient_id=patient_id,
                    medication_id="metformin",
                    taken_at=now - timedelta(minutes=3 - number),
                )
            )
    for event in published:
        print(f"published {event.event_type} {event.event_id}", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "example-patient"))
