"""Which devices a selector selects: one rule, for rollouts and blueprints alike."""

from __future__ import annotations

from shared.messages.inventory import DeviceRecord
from shared.messages.rollout import Selector


def selects(selector: Selector, device: DeviceRecord) -> bool:
    """Whether the device meets every condition of the selector (an empty one selects all): labels by
    equality, any of the classes and architectures, one of the ids, at least the RAM, all of the
    accelerators."""
    return (
        all(device.labels.get(key) == value for key, value in selector.labels.items())
        and (not selector.device_classes or device.device_class in selector.device_classes)
        and (not selector.device_ids or device.device_id in selector.device_ids)
        and (not selector.arch or device.arch in selector.arch)
        and (selector.min_ram_mb is None or device.ram_mb >= selector.min_ram_mb)
        and set(selector.accelerators) <= set(device.accelerators)
    )
