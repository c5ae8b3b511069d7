"""The synthetic shop's seeded product catalogue and its registered users (not PostgreSQL's
system catalog: that is :mod:`shopstream.cdc.catalog`).

Both generators start from the same catalogue, so the clickstream talks about the same
products and users that the shop database holds, and joins between the two work::

    >>> shop = build_catalogue(seed=1)
    >>> shop.products[0].product_id, shop.users[41].user_id
    ('P000001', 'U000042')
    >>> build_catalogue(seed=1) == shop
    True

Prices are Korean won, which has no minor unit in use: every price is a whole number of won,
held as :class:`~decimal.Decimal` (``Decimal("12900")``) so that arithmetic stays exact and the
database's ``numeric(12,2)`` stores it as ``12900.00``. Prices end in 900 or 000 won like
real shelf prices.

The catalogue depends only on the seed and the sizes: it never reads the clock (signups lie
before :data:`CATALOGUE_AS_OF`), so a database seeded today and a clickstream generated tomorrow
agree. User names come from Faker's ``ko_KR`` locale; product names from word lists here, so a
Faker upgrade can change a user's name but never a product.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Literal

from faker import Faker

StorageType = Literal["ROOM", "COLD", "FROZEN"]
Grade = Literal["BRONZE", "SILVER", "GOLD", "VIP"]

STORAGE_TYPES: tuple[StorageType, ...] = ("ROOM", "COLD", "FROZEN")
GRADES: tuple[Grade, ...] = ("BRONZE", "SILVER", "GOLD", "VIP")

DEFAULT_PRODUCTS = 500
DEFAULT_USERS = 5_000

#: Every catalogue user signed up before this instant (three years before it at the earliest).
CATALOGUE_AS_OF = datetime(2026, 1, 1, tzinfo=UTC)
_SIGNUP_SPAN = timedelta(days=3 * 365)


@dataclass(frozen=True, slots=True)
class Product:
    product_id: str
    name: str
    category: str
    storage_type: StorageType
    price: Decimal
    stock: int
    #: Relative popularity: how often shoppers look at it compared with the others.
    popularity: float


@dataclass(frozen=True, slots=True)
class User:
    user_id: str
    email: str
    name: str
    grade: Grade
    created_at: datetime
    #: Relative activity: how often this user comes back to the shop.
    activity: float


@dataclass(frozen=True, slots=True)
class _Category:
    name: str
    share: float  # of the catalogue's products
    price_range: tuple[int, int]  # won
    storage_weights: tuple[float, float, float]  # ROOM, COLD, FROZEN
    adjectives: tuple[str, ...]
    nouns: tuple[str, ...]


# Shares and price bands follow a general Korean online mall; fresh and frozen goods live in
# food, which is why food is the only category with much cold-chain delivery.
_CATEGORIES: tuple[_Category, ...] = (
    _Category(
        "fashion",
        0.20,
        (9_900, 189_000),
        (1, 0, 0),
        ("Linen", "Oversized", "Slim-fit", "Wool", "Cotton", "Denim", "Cropped", "Pleated"),
        ("Shirt", "Jacket", "Trousers", "Dress", "Hoodie", "Skirt", "Sneakers", "Coat", "Knit"),
    ),
    _Category(
        "beauty",
        0.12,
        (5_900, 89_000),
        (0.92, 0.08, 0),
        ("Hydrating", "Vegan", "Soothing", "Brightening", "Mild", "Daily", "Cica", "Matte"),
        ("Toner", "Serum", "Sunscreen", "Cushion", "Cleansing Foam", "Lip Tint", "Cream", "Mask"),
    ),
    _Category(
        "food",
        0.18,
        (2_900, 49_000),
        (0.40, 0.35, 0.25),
        ("Organic", "Jeju", "Fresh", "Premium", "Homemade", "Spicy", "Low-sugar", "Hanwoo"),
        ("Kimchi", "Tangerines", "Tofu", "Dumplings", "Rice", "Eggs", "Milk", "Bulgogi", "Ramyeon"),
    ),
    _Category(
        "electronics",
        0.08,
        (19_000, 1_990_000),
        (1, 0, 0),
        ("Wireless", "Smart", "Portable", "4K", "Noise-cancelling", "Compact", "Fast", "Mini"),
        ("Earbuds", "Monitor", "Charger", "Speaker", "Keyboard", "Tablet", "Air Purifier"),
    ),
    _Category(
        "home",
        0.12,
        (4_900, 299_000),
        (1, 0, 0),
        ("Nordic", "Ceramic", "Bamboo", "Stackable", "Minimal", "Cozy", "Stainless", "Linen"),
        ("Mug", "Blanket", "Lamp", "Storage Box", "Towel Set", "Pan", "Cushion", "Rug"),
    ),
    _Category(
        "sports",
        0.08,
        (9_900, 399_000),
        (1, 0, 0),
        ("Lightweight", "Waterproof", "Pro", "Breathable", "Foldable", "Trail", "Yoga", "Grip"),
        ("Running Shoes", "Mat", "Dumbbells", "Backpack", "Leggings", "Tent", "Bottle"),
    ),
    _Category(
        "kids",
        0.08,
        (3_900, 159_000),
        (0.9, 0.1, 0),
        ("Soft", "Wooden", "Educational", "Baby", "Colourful", "Safe", "Musical", "Mini"),
        ("Blocks", "Puzzle", "Stroller", "Onesie", "Picture Book", "Snack", "Doll", "Car"),
    ),
    _Category(
        "books",
        0.08,
        (8_000, 45_000),
        (1, 0, 0),
        ("Bestselling", "Illustrated", "Revised", "Collected", "Pocket", "Hardcover"),
        ("Novel", "Cookbook", "Travel Guide", "Essay", "Workbook", "Comic", "Poetry"),
    ),
    _Category(
        "pets",
        0.06,
        (3_900, 89_000),
        (0.85, 0.05, 0.10),
        ("Grain-free", "Senior", "Puppy", "Natural", "Dental", "Freeze-dried", "Cozy"),
        ("Dog Food", "Cat Litter", "Chew Toy", "Cat Treats", "Pet Bed", "Leash"),
    ),
)

CATEGORIES: tuple[str, ...] = tuple(c.name for c in _CATEGORIES)

# Most members sit in the entry grade; VIPs are the few who buy a lot.
_GRADE_WEIGHTS = (0.55, 0.25, 0.15, 0.05)


@dataclass(frozen=True)
class Catalogue:
    """Products and users of the synthetic shop, with helpers to pick them like shoppers do."""

    seed: int
    products: tuple[Product, ...]
    users: tuple[User, ...]
    _product_cum: tuple[float, ...] = field(repr=False, compare=False)
    _user_cum: tuple[float, ...] = field(repr=False, compare=False)
    _by_category: dict[str, tuple[Product, ...]] = field(repr=False, compare=False)
    _by_id: dict[str, Product] = field(repr=False, compare=False)

    def product(self, product_id: str) -> Product:
        return self._by_id[product_id]

    def products_in(self, category: str) -> tuple[Product, ...]:
        return self._by_category[category]

    def popular_product(self, rng: random.Random) -> Product:
        """A product drawn by popularity: a few best sellers get most of the views."""
        cum = self._product_cum
        return self.products[bisect.bisect(cum, rng.random() * cum[-1])]

    def active_user(self, rng: random.Random) -> User:
        """A registered user drawn by activity: regulars come back more often."""
        cum = self._user_cum
        return self.users[bisect.bisect(cum, rng.random() * cum[-1])]


def product_id(number: int) -> str:
    return f"P{number:06d}"


def user_id(number: int) -> str:
    return f"U{number:06d}"


def shelf_price(rng: random.Random, low: int, high: int) -> Decimal:
    """A price between ``low`` and ``high`` won, spread log-uniformly, ending like 12,900."""
    raw = math.exp(rng.uniform(math.log(low), math.log(high)))
    thousands = max(1, round(raw / 1000))
    # Cheap goods end in 900 (12,900); expensive ones are often round (1,290,000).
    won = thousands * 1000 - 100 if thousands < 300 or rng.random() < 0.5 else thousands * 1000
    return Decimal(max(won, 900))


def _build_products(rng: random.Random, count: int) -> list[Product]:
    category_weights = [c.share for c in _CATEGORIES]
    products: list[Product] = []
    for number in range(1, count + 1):
        category = rng.choices(_CATEGORIES, weights=category_weights)[0]
        storage: StorageType = rng.choices(STORAGE_TYPES, weights=category.storage_weights)[0]
        name = f"{rng.choice(category.adjectives)} {rng.choice(category.nouns)}"
        # A few products are sold out; the rest carry a shelf's worth of stock.
        stock = 0 if rng.random() < 0.03 else rng.randint(20, 500)
        products.append(
            Product(
                product_id=product_id(number),
                name=name,
                category=category.name,
                storage_type=storage,
                price=shelf_price(rng, *category.price_range),
                stock=stock,
                # Zipf-like: rank r gets 1/r^0.8, shuffled so ids carry no hint of it.
                popularity=0.0,
            )
        )
    ranks = list(range(1, count + 1))
    rng.shuffle(ranks)
    return [
        Product(p.product_id, p.name, p.category, p.storage_type, p.price, p.stock, 1 / r**0.8)
        for p, r in zip(products, ranks, strict=True)
    ]


def _build_users(seed: int, rng: random.Random, count: int) -> list[User]:
    fake = Faker("ko_KR")
    fake.seed_instance(seed)
    span = int(_SIGNUP_SPAN.total_seconds())
    start = CATALOGUE_AS_OF - _SIGNUP_SPAN
    users: list[User] = []
    for number in range(1, count + 1):
        # The number in the local part keeps e-mails unique however Faker's names repeat.
        email = f"{fake.user_name()}{number}@{fake.free_email_domain()}"
        users.append(
            User(
                user_id=user_id(number),
                email=email,
                name=fake.name(),
                grade=rng.choices(GRADES, weights=_GRADE_WEIGHTS)[0],
                created_at=start + timedelta(seconds=rng.randrange(span)),
                # Heavy-tailed: most users visit now and then, a few every day.
                activity=rng.paretovariate(1.5),
            )
        )
    return users


@lru_cache(maxsize=8)
def build_catalogue(
    seed: int = 1, *, products: int = DEFAULT_PRODUCTS, users: int = DEFAULT_USERS
) -> Catalogue:
    """The catalogue for ``seed``: the same seed and sizes always give the same catalogue.

    Cached, because the clickstream and the shop workload in one process both ask for it.
    """
    if products < 1 or users < 1:
        raise ValueError("a shop needs at least one product and one user")
    rng = random.Random(f"catalogue/{seed}")  # noqa: S311 - reproducible, not secret
    product_rows = tuple(_build_products(rng, products))
    user_rows = tuple(_build_users(seed, rng, users))
    by_category: dict[str, list[Product]] = {name: [] for name in CATEGORIES}
    for p in product_rows:
        by_category[p.category].append(p)
    return Catalogue(
        seed=seed,
        products=product_rows,
        users=user_rows,
        _product_cum=tuple(itertools.accumulate(p.popularity for p in product_rows)),
        _user_cum=tuple(itertools.accumulate(u.activity for u in user_rows)),
        _by_category={name: tuple(rows) for name, rows in by_category.items()},
        _by_id={p.product_id: p for p in product_rows},
    )
