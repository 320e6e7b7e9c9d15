"""A double-entry ledger: accounts, transactions, balances and reports.

This module is deliberately longer than the others in the corpus, so that the syntax
judge's region logic for large Python documents is exercised too.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from enum import Enum
from typing import Iterable, Iterator

CENT = Decimal("0.01")


class Kind(Enum):
    ASSET = "asset"
    LIABILITY = "liability"
    EQUITY = "equity"
    INCOME = "income"
    EXPENSE = "expense"

    @property
    def debit_normal(self) -> bool:
        """Assets and expenses grow with debits; the others with credits."""
        return self in (Kind.ASSET, Kind.EXPENSE)


class LedgerError(Exception):
    pass


def money(value) -> Decimal:
    """Round anything numeric to whole cents."""
    return Decimal(str(value)).quantize(CENT, rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class Account:
    code: str
    name: str
    kind: Kind
    parent: str | None = None

    def __str__(self) -> str:
        return f"{self.code} {self.name}"


@dataclass
class Posting:
    account: str
    amount: Decimal  # positive: debit, negative: credit
    memo: str = ""


@dataclass
class Transaction:
    date: dt.date
    description: str
    postings: list[Posting] = field(default_factory=list)

    def debit(self, account: str, amount, memo: str = "") -> "Transaction":
        self.postings.append(Posting(account, money(amount), memo))
        return self

    def credit(self, account: str, amount, memo: str = "") -> "Transaction":
        self.postings.append(Posting(account, -money(amount), memo))
        return self

    def imbalance(self) -> Decimal:
        return sum((p.amount for p in self.postings), Decimal(0))

    def check(self) -> None:
        if len(self.postings) < 2:
            raise LedgerError(f"{self.description}: a transaction needs two postings")
        off = self.imbalance()
        if off != 0:
            raise LedgerError(f"{self.description}: debits and credits differ by {off}")


class Ledger:
    def __init__(self, accounts: Iterable[Account] = ()):
        self.accounts: dict[str, Account] = {}
        self.transactions: list[Transaction] = []
        for account in accounts:
            self.open(account)

    def open(self, account: Account) -> None:
        if account.code in self.accounts:
            raise LedgerError(f"account {account.code} exists")
        if account.parent is not None and account.parent not in self.accounts:
            raise LedgerError(f"parent {account.parent} of {account.code} is unknown")
        self.accounts[account.code] = account

    def post(self, transaction: Transaction) -> None:
        transaction.check()
        for posting in transaction.postings:
            if posting.account not in self.accounts:
                raise LedgerError(f"unknown account {posting.account}")
        self.transactions.append(transaction)
        self.transactions.sort(key=lambda t: t.date)

    def postings(self, code: str) -> Iterator[tuple[Transaction, Posting]]:
        for transaction in self.transactions:
            for posting in transaction.postings:
                if posting.account == code:
                    yield transaction, posting

    def balance(self, code: str, until: dt.date | None = None) -> Decimal:
        """Balance of an account in its normal direction, children included."""
        total = Decimal(0)
        codes = {code} | set(self.descendants(code))
        for transaction in self.transactions:
            if until is not None and transaction.date > until:
                break
            for posting in transaction.postings:
                if posting.account in codes:
                    total += posting.amount
        kind = self.accounts[code].kind
        return total if kind.debit_normal else -total

    def descendants(self, code: str) -> list[str]:
        found = []
        stack = [code]
        while stack:
            current = stack.pop()
            for account in self.accounts.values():
                if account.parent == current:
                    found.append(account.code)
                    stack.append(account.code)
        return found

    def trial_balance(self) -> dict[str, Decimal]:
        sums: dict[str, Decimal] = defaultdict(Decimal)
        for transaction in self.transactions:
            for posting in transaction.postings:
                sums[posting.account] += posting.amount
        return dict(sorted(sums.items()))


def income_statement(ledger: Ledger, start: dt.date, end: dt.date) -> dict[str, Decimal]:
    """Income and expenses between two dates, with the net result."""
    income = Decimal(0)
    expenses = Decimal(0)
    for transaction in ledger.transactions:
        if not start <= transaction.date <= end:
            continue
        for posting in transaction.postings:
            kind = ledger.accounts[posting.account].kind
            if kind is Kind.INCOME:
                income -= posting.amount
            elif kind is Kind.EXPENSE:
                expenses += posting.amount
    return {"income": income, "expenses": expenses, "net": income - expenses}


def balance_sheet(ledger: Ledger, on: dt.date) -> dict[str, dict[str, Decimal]]:
    sheet: dict[str, dict[str, Decimal]] = {k.value: {} for k in (Kind.ASSET, Kind.LIABILITY, Kind.EQUITY)}
    for account in ledger.accounts.values():
        if account.kind.value in sheet and account.parent is None:
            sheet[account.kind.value][account.name] = ledger.balance(account.code, until=on)
    return sheet


def monthly_totals(ledger: Ledger, code: str) -> list[tuple[str, Decimal]]:
    months: dict[str, Decimal] = defaultdict(Decimal)
    for transaction, posting in ledger.postings(code):
        months[transaction.date.strftime("%Y-%m")] += posting.amount
    return sorted(months.items())


def render(statement: dict[str, Decimal], width: int = 30) -> str:
    lines = []
    for label, amount in statement.items():
        lines.append(f"{label:<{width}}{amount:>12,.2f}")
    return "\n".join(lines)


def to_json(ledger: Ledger) -> str:
    """Serialise accounts and transactions (amounts as strings)."""
    data = {
        "accounts": [
            {"code": a.code, "name": a.name, "kind": a.kind.value, "parent": a.parent} for a in ledger.accounts.values()
        ],
        "transactions": [
            {
                "date": t.date.isoformat(),
                "description": t.description,
                "postings": [[p.account, str(p.amount), p.memo] for p in t.postings],
            }
            for t in ledger.transactions
        ],
    }
    return json.dumps(data, indent=2)


def from_json(text: str) -> Ledger:
    data = json.loads(text)
    ledger = Ledger()
    for a in data["accounts"]:
        ledger.open(Account(a["code"], a["name"], Kind(a["kind"]), a.get("parent")))
    for t in data["transactions"]:
        transaction = Transaction(dt.date.fromisoformat(t["date"]), t["description"])
        for account, amount, memo in t["postings"]:
            transaction.postings.append(Posting(account, Decimal(amount), memo))
        ledger.post(transaction)
    return ledger


def close_period(ledger: Ledger, on: dt.date, equity: str) -> Transaction:
    """Move the balances of income and expense accounts into an equity account."""
    closing = Transaction(on, f"closing {on.isoformat()}")
    total = Decimal(0)
    for account in ledger.accounts.values():
        if account.kind not in (Kind.INCOME, Kind.EXPENSE):
            continue
        raw = sum((p.amount for _, p in ledger.postings(account.code)), Decimal(0))
        if raw:
            closing.postings.append(Posting(account.code, -raw, "close"))
            total += raw
    if closing.postings:
        closing.postings.append(Posting(equity, total, "result"))
        ledger.post(closing)
    return closing


def sample() -> Ledger:
    ledger = Ledger(
        [
            Account("1000", "Cash", Kind.ASSET),
            Account("1100", "Bank", Kind.ASSET),
            Account("2000", "Loans", Kind.LIABILITY),
            Account("3000", "Capital", Kind.EQUITY),
            Account("4000", "Sales", Kind.INCOME),
            Account("5000", "Rent", Kind.EXPENSE),
        ]
    )
    ledger.post(Transaction(dt.date(2024, 1, 1), "capital").debit("1100", 5000).credit("3000", 5000))
    ledger.post(Transaction(dt.date(2024, 1, 5), "rent").debit("5000", 800).credit("1100", 800))
    ledger.post(Transaction(dt.date(2024, 1, 9), "sale").debit("1000", 120.5).credit("4000", 120.5))
    return ledger


if __name__ == "__main__":
    book = sample()
    print(render(income_statement(book, dt.date(2024, 1, 1), dt.date(2024, 12, 31))))
    print(
        json.dumps(
            {k: {n: str(v) for n, v in d.items()} for k, d in balance_sheet(book, dt.date(2024, 12, 31)).items()},
            indent=1,
        )
    )
