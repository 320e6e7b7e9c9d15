"""An in-memory inventory with reservations and a CSV export."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Iterable


class OutOfStock(Exception):
    """Raised when a reservation asks for more than is available."""


@dataclass
class Item:
    sku: str
    name: str
    quantity: int = 0
    reserved: int = 0
    tags: list[str] = field(default_factory=list)

    @property
    def available(self) -> int:
        return self.quantity - self.reserved


class Inventory:
    def __init__(self, items: Iterable[Item] = ()):
        self._items = {item.sku: item for item in items}

    def add(self, sku: str, name: str, quantity: int = 1) -> Item:
        """Add stock, creating the item when it is new."""
        item = self._items.get(sku)
        if item is None:
            item = Item(sku, name)
            self._items[sku] = item
        item.quantity += quantity
        return item

    def reserve(self, sku: str, quantity: int) -> None:
        item = self._items[sku]
        if quantity > item.available:
            raise OutOfStock(f"{sku}: {quantity} wanted, {item.available} available")
        item.reserved += quantity

    def release(self, sku: str, quantity: int) -> None:
        item = self._items[sku]
        item.reserved = max(0, item.reserved - quantity)

    def low_stock(self, threshold: int = 5) -> list[Item]:
        """Items whose available count is below ``threshold``, fewest first."""
        low = [item for item in self._items.values() if item.available < threshold]
        low.sort(key=lambda item: (item.available, item.sku))
        return low

    def by_tag(self, tag: str) -> list[Item]:
        found = []
        for item in self._items.values():
            if tag in item.tags:
                found.append(item)
        return found

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["sku", "name", "quantity", "reserved"])
        for sku in sorted(self._items):
            item = self._items[sku]
            writer.writerow([item.sku, item.name, item.quantity, item.reserved])
        return buffer.getvalue()


def merge(first: Inventory, second: Inventory) -> Inventory:
    """A new inventory holding the stock of both."""
    merged = Inventory()
    for source in (first, second):
        for item in source._items.values():
            added = merged.add(item.sku, item.name, item.quantity)
            added.reserved += item.reserved
            added.tags = sorted(set(added.tags) | set(item.tags))
    return merged
