import { readFileSync } from "fs";

export interface Order {
  customer: string;
  item: string;
  qty: number;
  price: number;
}

export interface Summary {
  name: string;
  orders: number;
  total: number;
}

/** Each customer's order count and total, largest first, and the grand total. */
export function summarize(path: string): { customers: Summary[]; total: number } {
  const list = JSON.parse(readFileSync(path, "utf8")) as Order[];
  const byName = new Map<string, Summary>();
  let total = 0;
  for (const o of list) {
    const s: Summary = byName.get(o.customer) ?? { name: o.customer, orders: 0, total: 0 };
    s.orders += 1;
    s.total += o.qty * o.price;
    total += o.qty * o.price;
    byName.set(o.customer, s);
  }
  const customers = [...byName.values()].sort((a, b) => b.total - a.total);
  return { customers, total };
}
