"""Order totals per customer, from a JSON list of orders."""
import json
from dataclasses import dataclass


@dataclass
class Summary:
    name: str
    orders: int = 0
    total: float = 0.0


def summarize(path):
    """Each customer's order count and total, largest first, and the grand total."""
    with open(path, encoding="utf-8") as f:
        orders = json.load(f)
    by_name = {}
    for o in orders:
        s = by_name.setdefault(o["customer"], Summary(o["customer"]))
        s.orders += 1
        s.total += o["qty"] * o["price"]
    customers = sorted(by_name.values(), key=lambda s: s.total, reverse=True)
    return customers, sum(s.total for s in customers)
