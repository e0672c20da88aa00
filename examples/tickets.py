"""Write a CSV of support tickets to try `lifelong run --data` on: text, intent, product, created_at.

    python examples/tickets.py tickets.csv            # 1,200 tickets, 4 products of 3 intents each
    lifelong data show csv:tickets.csv,text=text,label=intent,task=product

The tickets are made from templates and word lists by a fixed seed (so anyone gets the same file):
each product's intents are its own, and the products arrive one after another over 2025 (the
created_at column), as a help desk taking on one product line after another would see them.
"""

from __future__ import annotations

import argparse
import csv
import random
from datetime import datetime, timedelta, timezone

PRODUCTS = {
    "billing": {
        "refund": ["I want my money back for {thing}", "please refund the {thing} I returned",
                   "how long does a refund for {thing} take", "refund me, {thing} never worked"],
        "invoice": ["where can I download the invoice for {thing}", "the invoice for {thing} has the wrong address",
                    "send me a copy of my {month} invoice", "I need a VAT invoice for {thing}"],
        "charged_twice": ["I was charged twice for {thing}", "two payments for one {thing} order",
                          "my card shows a double charge in {month}", "why did you bill me twice"],
    },
    "shipping": {
        "track": ["where is my {thing}", "tracking says my {thing} is stuck in {city}",
                  "my parcel to {city} has not moved in days", "when will the {thing} arrive"],
        "address": ["change the delivery address to {city}", "I moved to {city}, update my shipping address",
                    "wrong street on my {thing} order", "deliver the {thing} to my office in {city} instead"],
        "damaged": ["the {thing} arrived broken", "my {thing} came with a cracked screen",
                    "box crushed and the {thing} is damaged", "parts of the {thing} are missing and bent"],
    },
    "account": {
        "password": ["I forgot my password", "reset my password please, the link expired",
                     "cannot log in since {month}, password not accepted", "the password reset email never came"],
        "delete": ["delete my account and all my data", "close my account, I moved to another shop",
                   "how do I remove my profile", "erase everything you store about me"],
        "two_factor": ["my authenticator app lost the codes", "turn off two-factor, I changed phones",
                       "the sms code never arrives in {city}", "set up two-step login for my account"],
    },
    "subscription": {
        "cancel": ["cancel my subscription", "stop renewing my {plan} plan",
                   "I do not want the {plan} plan after {month}", "end the trial before it charges me"],
        "upgrade": ["move me to the {plan} plan", "what does the {plan} plan add", "upgrade to {plan} from {month}",
                    "can I switch to yearly {plan}"],
        "pause": ["pause my plan while I travel to {city}", "freeze the subscription for {month}",
                  "can I skip a month", "hold my {plan} deliveries until I am back"],
    },
}
FILL = {"thing": ["headphones", "kettle", "phone case", "lamp", "backpack", "keyboard", "printer", "jacket", "router"],
        "city": ["Lyon", "Leeds", "Porto", "Graz", "Turin", "Ghent", "Cork", "Malmo"],
        "month": ["January", "March", "May", "July", "September", "November"],
        "plan": ["basic", "plus", "family", "pro"]}
OPENERS = ["", "hi, ", "hello, ", "urgent: ", "please help, ", "quick question: "]


def tickets(per_intent: int, seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)
    start = datetime(2025, 1, 1, tzinfo=timezone.utc)
    rows = []
    for p, (product, intents) in enumerate(PRODUCTS.items()):  # one product line after another over the year
        for _ in range(per_intent):
            for intent, templates in intents.items():
                text = rng.choice(templates).format(**{k: rng.choice(v) for k, v in FILL.items()})
                when = start + timedelta(days=91 * p + rng.uniform(0, 91))
                rows.append({"text": rng.choice(OPENERS) + text, "intent": intent, "product": product,
                             "created_at": when.isoformat(timespec="seconds")})
    rows.sort(key=lambda r: r["created_at"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="the CSV file to write")
    parser.add_argument("--per-intent", type=int, default=100, help="tickets per intent (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = tickets(args.per_intent, args.seed)
    with open(args.out, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"{len(rows)} tickets written to {args.out}")


if __name__ == "__main__":
    main()
