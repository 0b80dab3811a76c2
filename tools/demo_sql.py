"""Writes routesh/demo/demo.sql: the bundled demo database, Rayon Cycles, a fictional chain of
eight bicycle shops in France.

A commit-time tool kept out of the installed package: run it from the repository root after
changing the data or the schema, and commit the .sql it writes (ensure_demo_db rebuilds users'
copies when the script's hash changes).

    python tools/demo_sql.py          # rewrite routesh/demo/demo.sql
    python tools/demo_sql.py --check  # exit 1 if demo.sql is not what this would write

Everything random comes from one random.Random with a fixed seed, so the output is the same
on every run. The data is shaped to answer questions with visible structure: spring and
summer peaks, growth from 2024 to 2025, a few big spenders, Paris and Lyon busiest, recent
orders not yet shipped, a management chain with some wide and some narrow teams.
"""

from __future__ import annotations

import argparse
import sys
import unicodedata
from collections.abc import Sequence
from datetime import date, timedelta
from pathlib import Path
from random import Random

SEED = 20240101
FIRST_DAY = date(2024, 1, 1)
LAST_DAY = date(2025, 12, 31)  # the data's "today": orders near it are still open
N_CUSTOMERS = 520
N_ORDERS = 1450
OUT = Path(__file__).resolve().parent.parent / "routesh" / "demo" / "demo.sql"

SCHEMA = """\
-- Cities where stores and customers are.
CREATE TABLE cities (
    city_id     INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    region      TEXT NOT NULL,
    country     TEXT NOT NULL DEFAULT 'France',
    UNIQUE (name, country)
);

CREATE TABLE stores (
    store_id    INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    city_id     INTEGER NOT NULL,
    street      TEXT NOT NULL,
    postal_code TEXT NOT NULL,
    phone       TEXT NOT NULL,
    opened_on   DATE NOT NULL,
    FOREIGN KEY (city_id) REFERENCES cities (city_id)
);

-- store_id is NULL for head-office staff; manager_id is NULL only for the CEO.
CREATE TABLE employees (
    employee_id INTEGER PRIMARY KEY,
    first_name  TEXT NOT NULL,
    last_name   TEXT NOT NULL,
    email       TEXT NOT NULL UNIQUE,
    job_title   TEXT NOT NULL,
    store_id    INTEGER,
    manager_id  INTEGER,
    hire_date   DATE NOT NULL,
    salary      NUMERIC(10, 2) NOT NULL CHECK (salary > 0),  -- yearly gross, EUR
    FOREIGN KEY (store_id) REFERENCES stores (store_id),
    FOREIGN KEY (manager_id) REFERENCES employees (employee_id),
    CHECK (manager_id IS NULL OR manager_id <> employee_id)
);

CREATE TABLE customers (
    customer_id INTEGER PRIMARY KEY,
    first_name  TEXT NOT NULL,
    last_name   TEXT NOT NULL,
    email       TEXT NOT NULL UNIQUE,
    phone       TEXT,                -- NULL: not given
    street      TEXT NOT NULL,
    postal_code TEXT NOT NULL,
    city_id     INTEGER NOT NULL,
    birth_year  INTEGER CHECK (birth_year BETWEEN 1930 AND 2010),  -- NULL: not given
    joined_on   DATE NOT NULL,
    FOREIGN KEY (city_id) REFERENCES cities (city_id)
);

CREATE TABLE categories (
    category_id INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    department  TEXT NOT NULL CHECK (department IN ('Bikes', 'Parts & Accessories', 'Clothing', 'Services'))
);

-- model_year is set for bikes only; brand is NULL for workshop services.
CREATE TABLE products (
    product_id   INTEGER PRIMARY KEY,
    name         TEXT NOT NULL,
    brand        TEXT,
    category_id  INTEGER NOT NULL,
    model_year   INTEGER CHECK (model_year BETWEEN 2020 AND 2030),
    list_price   NUMERIC(10, 2) NOT NULL CHECK (list_price > 0),  -- EUR, VAT included
    discontinued INTEGER NOT NULL DEFAULT 0 CHECK (discontinued IN (0, 1)),
    FOREIGN KEY (category_id) REFERENCES categories (category_id),
    UNIQUE (name, model_year)
);

-- employee_id is the salesperson for in-store orders, NULL for online ones.
-- shipped_date is NULL until the goods leave the store (pending, processing, cancelled).
CREATE TABLE orders (
    order_id     INTEGER PRIMARY KEY,
    customer_id  INTEGER NOT NULL,
    store_id     INTEGER NOT NULL,
    employee_id  INTEGER,
    channel      TEXT NOT NULL CHECK (channel IN ('in_store', 'online')),
    status       TEXT NOT NULL CHECK (status IN ('pending', 'processing', 'shipped', 'delivered', 'cancelled')),
    order_date   DATE NOT NULL,
    shipped_date DATE,
    FOREIGN KEY (customer_id) REFERENCES customers (customer_id),
    FOREIGN KEY (store_id) REFERENCES stores (store_id),
    FOREIGN KEY (employee_id) REFERENCES employees (employee_id),
    CHECK ((channel = 'online') = (employee_id IS NULL)),
    CHECK ((status IN ('shipped', 'delivered')) = (shipped_date IS NOT NULL)),
    CHECK (shipped_date IS NULL OR shipped_date >= order_date)
);

-- One row per order line; the line's amount is quantity * unit_price * (1 - discount).
CREATE TABLE order_items (
    order_id    INTEGER NOT NULL,
    line_no     INTEGER NOT NULL CHECK (line_no > 0),
    product_id  INTEGER NOT NULL,
    quantity    INTEGER NOT NULL CHECK (quantity > 0),
    unit_price  NUMERIC(10, 2) NOT NULL CHECK (unit_price >= 0),  -- EUR, the price charged
    discount    REAL NOT NULL DEFAULT 0 CHECK (discount >= 0 AND discount < 1),  -- 0.10 = 10 %
    PRIMARY KEY (order_id, line_no),
    FOREIGN KEY (order_id) REFERENCES orders (order_id) ON DELETE CASCADE,
    FOREIGN KEY (product_id) REFERENCES products (product_id)
);

-- Paid orders have one payment, two (gift card + card) or three monthly instalments
-- (financing). Cancelled orders and some pending online orders have none.
CREATE TABLE payments (
    payment_id  INTEGER PRIMARY KEY,
    order_id    INTEGER NOT NULL,
    paid_on     DATE NOT NULL,
    amount      NUMERIC(10, 2) NOT NULL CHECK (amount > 0),  -- EUR
    method      TEXT NOT NULL CHECK (method IN ('card', 'cash', 'paypal', 'bank_transfer', 'gift_card', 'financing')),
    FOREIGN KEY (order_id) REFERENCES orders (order_id)
);

CREATE INDEX idx_customers_city ON customers (city_id);
CREATE INDEX idx_employees_manager ON employees (manager_id);
CREATE INDEX idx_orders_customer ON orders (customer_id);
CREATE INDEX idx_orders_date ON orders (order_date);
CREATE INDEX idx_order_items_product ON order_items (product_id);
CREATE INDEX idx_payments_order ON payments (order_id);

-- One row per order with its amount (cancelled orders included: filter on status).
CREATE VIEW order_totals AS
SELECT o.order_id,
       o.customer_id,
       o.store_id,
       o.channel,
       o.status,
       o.order_date,
       SUM(i.quantity) AS item_count,
       ROUND(SUM(i.quantity * i.unit_price * (1 - i.discount)), 2) AS total_amount
FROM orders AS o
JOIN order_items AS i ON i.order_id = o.order_id
GROUP BY o.order_id;

-- Units sold and revenue per product, cancelled orders left out.
CREATE VIEW product_sales AS
SELECT p.product_id,
       p.name AS product_name,
       p.brand,
       c.name AS category,
       SUM(i.quantity) AS units_sold,
       ROUND(SUM(i.quantity * i.unit_price * (1 - i.discount)), 2) AS revenue
FROM order_items AS i
JOIN orders AS o ON o.order_id = i.order_id
JOIN products AS p ON p.product_id = i.product_id
JOIN categories AS c ON c.category_id = p.category_id
WHERE o.status <> 'cancelled'
GROUP BY p.product_id;
"""

# (name, region, country, weight for customers, postal codes)
CITIES = [
    ("Paris", "Île-de-France", "France", 30, [f"750{n:02d}" for n in range(1, 21)]),
    ("Lyon", "Auvergne-Rhône-Alpes", "France", 14, [f"6900{n}" for n in range(1, 10)]),
    ("Marseille", "Provence-Alpes-Côte d'Azur", "France", 8, [f"130{n:02d}" for n in range(1, 17)]),
    ("Bordeaux", "Nouvelle-Aquitaine", "France", 8, ["33000", "33100", "33200", "33300", "33800"]),
    ("Lille", "Hauts-de-France", "France", 7, ["59000", "59160", "59260", "59777", "59800"]),
    ("Nantes", "Pays de la Loire", "France", 7, ["44000", "44100", "44200", "44300"]),
    ("Toulouse", "Occitanie", "France", 7, ["31000", "31100", "31200", "31300", "31400", "31500"]),
    ("Strasbourg", "Grand Est", "France", 3, ["67000", "67100", "67200"]),
    ("Montpellier", "Occitanie", "France", 2, ["34000", "34070", "34080", "34090"]),
    ("Rennes", "Bretagne", "France", 2, ["35000", "35200", "35700"]),
    ("Grenoble", "Auvergne-Rhône-Alpes", "France", 2, ["38000", "38100"]),
    ("Villeurbanne", "Auvergne-Rhône-Alpes", "France", 3, ["69100"]),
    ("Boulogne-Billancourt", "Île-de-France", "France", 2, ["92100"]),
    ("Versailles", "Île-de-France", "France", 1, ["78000"]),
    ("Annecy", "Auvergne-Rhône-Alpes", "France", 1, ["74000"]),
    ("Nice", "Provence-Alpes-Côte d'Azur", "France", 1, ["06000", "06100", "06200", "06300"]),
    ("Dijon", "Bourgogne-Franche-Comté", "France", 1, ["21000"]),
    ("Tours", "Centre-Val de Loire", "France", 1, ["37000", "37100", "37200"]),
    ("Brussels", "Brussels-Capital", "Belgium", 1, ["1000", "1050", "1060"]),
    ("Geneva", "Geneva", "Switzerland", 1, ["1201", "1204", "1205", "1207"]),
]

# (name, city, street, postal code, phone, opened on, region: 'North' | 'South')
STORES = [
    ("Paris Bastille", "Paris", "14 rue de la Roquette", "75011", "+33 1 43 55 21 90", date(2012, 4, 2), "North"),
    ("Paris Batignolles", "Paris", "57 rue des Moines", "75017", "+33 1 42 63 18 07", date(2017, 9, 15), "North"),
    ("Lyon Presqu'île", "Lyon", "22 rue de la Charité", "69002", "+33 4 78 42 66 31", date(2014, 3, 10), "South"),
    ("Marseille Vieux-Port", "Marseille", "9 quai de Rive Neuve", "13007", "+33 4 91 33 70 48", date(2016, 5, 23), "South"),
    ("Bordeaux Chartrons", "Bordeaux", "81 rue Notre-Dame", "33000", "+33 5 56 81 42 15", date(2018, 2, 5), "South"),
    ("Lille Vieux-Lille", "Lille", "6 rue de la Monnaie", "59800", "+33 3 20 06 54 72", date(2019, 10, 1), "North"),
    ("Nantes Île de Nantes", "Nantes", "30 boulevard de la Prairie au Duc", "44200", "+33 2 40 48 19 63", date(2021, 4, 12), "North"),
    ("Toulouse Capitole", "Toulouse", "18 rue du Taur", "31000", "+33 5 61 21 87 34", date(2022, 6, 20), "South"),
]
# Per store: staff besides its manager, and how many of them report to an assistant manager.
STORE_STAFF = {1: (7, 3), 2: (5, 0), 3: (6, 2), 4: (3, 0), 5: (4, 0), 6: (3, 0), 7: (2, 0), 8: (4, 0)}
STORE_WEIGHT = {1: 10, 2: 7, 3: 9, 4: 5, 5: 5, 6: 4, 7: 4, 8: 4}  # for customers from elsewhere

# (name, department)
CATEGORIES = [
    ("Road Bikes", "Bikes"),
    ("Mountain Bikes", "Bikes"),
    ("Gravel Bikes", "Bikes"),
    ("City & Folding Bikes", "Bikes"),
    ("Electric Bikes", "Bikes"),
    ("Kids' Bikes", "Bikes"),
    ("Helmets", "Parts & Accessories"),
    ("Lights & Locks", "Parts & Accessories"),
    ("Components & Tyres", "Parts & Accessories"),
    ("Bags & Accessories", "Parts & Accessories"),
    ("Clothing", "Clothing"),
    ("Workshop", "Services"),
]

# Bikes: (category, brand, model, base price of the 2024 model). Each model exists in two or
# three model years; older years are discontinued.
BIKES = [
    ("Road Bikes", "Trek", "Domane AL 2", 1099),
    ("Road Bikes", "Trek", "Domane SL 5", 3299),
    ("Road Bikes", "Specialized", "Allez Sport", 1250),
    ("Road Bikes", "Specialized", "Tarmac SL7 Comp", 4800),
    ("Road Bikes", "Giant", "Contend AR 2", 1199),
    ("Road Bikes", "Cannondale", "SuperSix EVO 4", 2899),
    ("Road Bikes", "Scott", "Addict 30", 2599),
    ("Mountain Bikes", "Trek", "Marlin 6", 899),
    ("Mountain Bikes", "Trek", "Fuel EX 7", 4299),
    ("Mountain Bikes", "Specialized", "Rockhopper Sport", 849),
    ("Mountain Bikes", "Giant", "Talon 1", 999),
    ("Mountain Bikes", "Scott", "Spark 960", 2999),
    ("Mountain Bikes", "Cube", "Stereo ONE44 C:62", 3899),
    ("Gravel Bikes", "Specialized", "Diverge E5", 1400),
    ("Gravel Bikes", "Trek", "Checkpoint ALR 5", 2199),
    ("Gravel Bikes", "Giant", "Revolt 2", 1299),
    ("Gravel Bikes", "Cannondale", "Topstone 2", 1899),
    ("Gravel Bikes", "Orbea", "Terra H40", 1999),
    ("City & Folding Bikes", "Brompton", "C Line Explore", 1850),
    ("City & Folding Bikes", "Trek", "FX 2", 749),
    ("City & Folding Bikes", "Cube", "Hyde Pro", 999),
    ("City & Folding Bikes", "Gazelle", "Esprit C7", 799),
    ("City & Folding Bikes", "Tern", "Link D8", 899),
    ("Electric Bikes", "Moustache", "Samedi 28.2", 3299),
    ("Electric Bikes", "Gazelle", "Ultimate C380", 3999),
    ("Electric Bikes", "Riese & Müller", "Charger4 GT", 5999),
    ("Electric Bikes", "Specialized", "Turbo Vado 4.0", 4199),
    ("Electric Bikes", "Trek", "Allant+ 7", 3799),
    ("Electric Bikes", "Cube", "Kathmandu Hybrid ONE 750", 3499),
    ("Electric Bikes", "Tern", "GSD S10", 6499),
    ("Kids' Bikes", "Woom", "Woom 3", 499),
    ("Kids' Bikes", "Woom", "Woom 4", 559),
    ("Kids' Bikes", "Frog", "Frog 55", 449),
    ("Kids' Bikes", "Trek", "Precaliber 20", 369),
    ("Kids' Bikes", "Specialized", "Riprock 24", 599),
]

# Everything else: (category, brand, name, price)
GEAR = [
    ("Helmets", "Giro", "Register MIPS helmet", 69.99),
    ("Helmets", "Giro", "Syntax MIPS helmet", 139.99),
    ("Helmets", "Abus", "Hyban 2.0 helmet", 79.95),
    ("Helmets", "Abus", "Smiley 3.0 kids' helmet", 39.95),
    ("Helmets", "Bell", "Falcon XRV MIPS helmet", 119.00),
    ("Helmets", "POC", "Ventral Air MIPS helmet", 279.95),
    ("Helmets", "Lazer", "Tonic KinetiCore helmet", 89.99),
    ("Lights & Locks", "Lezyne", "Macro Drive 1400+ front light", 84.99),
    ("Lights & Locks", "Lezyne", "Strip Drive Pro rear light", 49.99),
    ("Lights & Locks", "Knog", "Blinder Road 600 front light", 79.95),
    ("Lights & Locks", "Busch & Müller", "IQ-X dynamo headlight", 139.90),
    ("Lights & Locks", "Cateye", "Volt 800 front light", 74.90),
    ("Lights & Locks", "Abus", "Granit X-Plus 540 U-lock", 109.95),
    ("Lights & Locks", "Abus", "Bordo 6000 folding lock", 89.95),
    ("Lights & Locks", "Kryptonite", "Evolution Mini-7 U-lock", 84.95),
    ("Lights & Locks", "Hiplok", "DX U-lock", 99.99),
    ("Components & Tyres", "Continental", "Grand Prix 5000 tyre 700x28", 59.95),
    ("Components & Tyres", "Schwalbe", "Marathon Plus tyre 700x35", 44.90),
    ("Components & Tyres", "Schwalbe", "Inner tube 700x28-45", 6.90),
    ("Components & Tyres", "Shimano", "CN-HG601 11-speed chain", 32.99),
    ("Components & Tyres", "Shimano", "105 R7100 cassette 11-34", 89.99),
    ("Components & Tyres", "Shimano", "PD-M520 SPD pedals", 34.99),
    ("Components & Tyres", "SRAM", "GX Eagle 12-speed chain", 42.00),
    ("Components & Tyres", "Brooks", "B17 leather saddle", 139.00),
    ("Components & Tyres", "Selle Italia", "Novus Boost saddle", 99.90),
    ("Components & Tyres", "Ergon", "GP1 ergonomic grips", 29.95),
    ("Components & Tyres", "Shimano", "Deore disc brake pads (pair)", 14.99),
    ("Bags & Accessories", "Ortlieb", "Back-Roller Classic panniers (pair)", 134.99),
    ("Bags & Accessories", "Ortlieb", "Saddle-Bag Two 1.6 L", 44.99),
    ("Bags & Accessories", "Topeak", "JoeBlow Sport III floor pump", 49.95),
    ("Bags & Accessories", "Lezyne", "Pocket Drive mini pump", 27.99),
    ("Bags & Accessories", "Topeak", "Mini 20 Pro multi-tool", 39.95),
    ("Bags & Accessories", "Elite", "Custom Race bottle cage", 12.90),
    ("Bags & Accessories", "Camelbak", "Podium bottle 620 ml", 12.99),
    ("Bags & Accessories", "SKS", "Bluemels mudguard set", 39.99),
    ("Bags & Accessories", "Thule", "Yepp Nexxt Maxi child seat", 149.95),
    ("Bags & Accessories", "Garmin", "Edge 540 GPS computer", 349.99),
    ("Bags & Accessories", "Muc-Off", "Nano Tech bike cleaner 1 L", 14.99),
    ("Clothing", "Rapha", "Core jersey", 80.00),
    ("Clothing", "Rapha", "Core cargo bib shorts", 125.00),
    ("Clothing", "Castelli", "Entrata jersey", 69.95),
    ("Clothing", "Castelli", "Perfetto RoS 2 jacket", 249.95),
    ("Clothing", "Endura", "Hummvee waterproof jacket", 119.99),
    ("Clothing", "Gore Wear", "C3 Windstopper gloves", 59.95),
    ("Clothing", "Giro", "DND summer gloves", 24.95),
    ("Clothing", "Endura", "Hummvee baggy shorts", 74.99),
    ("Clothing", "Shimano", "RC3 road shoes", 119.99),
    ("Clothing", "Rapha", "Merino socks", 19.00),
    ("Workshop", None, "Standard service", 69.00),
    ("Workshop", None, "Full service", 149.00),
    ("Workshop", None, "Puncture repair", 15.00),
    ("Workshop", None, "Wheel truing", 25.00),
    ("Workshop", None, "Professional bike fit", 180.00),
    ("Workshop", None, "E-bike diagnostic", 49.00),
]
# Gear no longer sold (only in 2024 orders).
DISCONTINUED_GEAR = {"Volt 800 front light", "Entrata jersey", "CN-HG601 11-speed chain"}

FIRST_NAMES = """Emma Louise Jade Alice Chloé Lina Léa Rose Anna Mila Inès Ambre Julia Juliette Léna Zoé
Manon Camille Sarah Clara Lucie Charlotte Eva Agathe Margaux Pauline Mathilde Élise Sophie Claire
Nathalie Isabelle Sandrine Valérie Céline Aurélie Émilie Marion Laura Amandine Hélène Anne Marie
Gabriel Léo Raphaël Louis Arthur Jules Adam Lucas Hugo Maël Noah Paul Nathan Tom Théo Victor
Ethan Martin Antoine Baptiste Maxime Alexandre Thomas Nicolas Julien Pierre Romain Mathieu Guillaume
Olivier Sébastien Laurent Philippe Stéphane François Vincent Benoît Clément Quentin Yann Karim
Mehdi Youssef Samir Amine Sofia Yasmine Nadia Leila Fatima Omar Ibrahim Moussa Aïcha Kofi Mariam
Luca Matteo Giulia Elena Pablo Lucia Diego Carmen João Ana Jan Sven Anke Lars Freya Niamh Liam Aoife
Tomasz Katarzyna Mei Wei Hiroshi Yuki""".split()

LAST_NAMES = """Martin Bernard Thomas Petit Robert Richard Durand Dubois Moreau Laurent Simon Michel
Lefebvre Leroy Roux David Bertrand Morel Fournier Girard Bonnet Dupont Lambert Fontaine Rousseau
Vincent Muller Lefèvre Faure André Mercier Blanc Guérin Boyer Garnier Chevalier François Legrand
Gauthier Garcia Perrin Robin Clément Morin Nicolas Henry Roussel Mathieu Gautier Masson Marchand
Duval Denis Dumont Marie Lemaire Noël Meyer Dufour Meunier Brun Blanchard Giraud Joly Rivière
Lucas Brunet Gaillard Barbier Arnaud Martinez Gérard Roche Renard Schmitt Roy Leroux Colin Vidal
Caron Picard Roger Fabre Aubert Lemoine Renaud Dumas Lacroix Olivier Philippe Bourgeois Pierre
Benoît Rey Leclerc Payet Rolland Leclercq Guillaume Lecomte Lopez Jean Dupuy Guillot Hubert Berger
Carpentier Sanchez Dupuis Moulin Louis Deschamps Huet Vasseur Perez Boucher Fleury Royer Klein
Jacquet Adam Paris Poirier Marty Aubry Guyot Carré Charles Renault Charpentier Ménard Maillard
Baron Bertin Bailly Hervé Schneider Fernandez Collet Léger Bouvier Julien Prévost Millet
Perrot Daniel Cousin Germain Breton Besson Langlois Rémy Pelletier Lévêque Perrier
Leblanc Barré Lebrun Marchal Weber Mallet Hamon Boulanger Jacob Monnier Michaud Rodriguez Guichard
Gillet Étienne Grondin Poulain Tessier Chevallier Collin Chauvin Bouchet Gay Lemaître
Bénard Maréchal Humbert Reynaud Antoine Hoarau Perret Barthélemy Cordier Pichon Lejeune Gilbert
Lamy Delaunay Pasquier Carlier Laporte Benali Haddad Mansouri Diallo Traoré Nguyen Tran Rossi
Ferreira Costa Kowalski Jansen Peeters O'Brien""".split() + ["Le Gall", "Le Roux", "Le Goff", "Da Silva", "Van Damme"]

STREETS = """rue de la République|avenue Jean Jaurès|boulevard Voltaire|rue Victor Hugo|rue Pasteur
|rue de la Paix|avenue de la Libération|rue du Général de Gaulle|rue des Écoles|place de la Mairie
|rue Gambetta|boulevard Gambetta|rue Nationale|rue du Moulin|chemin des Vignes|rue des Lilas
|allée des Tilleuls|rue Émile Zola|rue Jules Ferry|avenue Foch|rue de la Gare|quai de la Loire
|rue Saint-Michel|rue des Acacias|impasse des Roses|rue du Faubourg|avenue des Champs|rue Danton
|rue Lamartine|rue Molière|boulevard de la Croix-Rousse|rue Sainte-Catherine|cours Lafayette
|rue de Belleville|rue Oberkampf|avenue Parmentier|rue de Charonne|rue Mouffetard|rue Nationale
|cours Julien|rue Paradis|rue Esquermoise|rue de Metz|rue Alsace-Lorraine""".replace("\n", "").split("|")

EMAIL_DOMAINS = ["example.com", "example.fr", "example.net", "example.org", "mail.example"]
MONTH_WEIGHT = [0.55, 0.65, 1.0, 1.35, 1.6, 1.55, 1.35, 0.85, 1.1, 0.9, 1.05, 1.25]


def ascii_slug(text: str) -> str:
    """'Élise', 'Le Gall' -> 'elise', 'le-gall': pieces of an e-mail address."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(c for c in text.lower().replace(" ", "-") if c.isalnum() or c == "-")


def sql_value(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, date):
        return f"'{value.isoformat()}'"
    return "'" + str(value).replace("'", "''") + "'"


def insert(table: str, columns: Sequence[str], rows: list[tuple], chunk: int = 100) -> str:
    """Multi-row INSERTs, one row a line, `chunk` rows a statement (kept modest so any SQLite
    build, whatever its limits, accepts them)."""
    out = [f"-- {table}: {len(rows)} rows"]
    for start in range(0, len(rows), chunk):
        out.append(f"INSERT INTO {table} ({', '.join(columns)}) VALUES")
        body = rows[start : start + chunk]
        out.append(",\n".join("(" + ", ".join(sql_value(v) for v in row) + ")" for row in body) + ";")
    return "\n".join(out) + "\n"


def money(x: float) -> float:
    return round(x + 1e-9, 2)


def generate() -> str:
    rng = Random(SEED)
    sections: list[str] = []
    counts: dict[str, int] = {}

    def emit(table: str, columns: Sequence[str], rows: list[tuple]) -> None:
        counts[table] = len(rows)
        sections.append(insert(table, columns, rows))

    # cities
    city_id = {name: i for i, (name, *_rest) in enumerate(CITIES, 1)}
    emit("cities", ["city_id", "name", "region", "country"], [(i, n, r, c) for i, (n, r, c, _w, _p) in enumerate(CITIES, 1)])

    # stores
    store_city = {}
    store_rows = []
    for sid, (name, city, street, postal, phone, opened, _region) in enumerate(STORES, 1):
        store_city[sid] = city_id[city]
        store_rows.append((sid, name, city_id[city], street, postal, phone, opened))
    emit("stores", ["store_id", "name", "city_id", "street", "postal_code", "phone", "opened_on"], store_rows)

    # employees: CEO -> head office (2 regional directors, e-commerce, finance) -> store managers
    # -> staff (some via an assistant manager). Managers get lower ids than their reports.
    used_names: set[tuple[str, str]] = set()

    def person() -> tuple[str, str]:
        while True:
            pair = (rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES))
            if pair not in used_names:
                used_names.add(pair)
                return pair

    employees: list[tuple] = []
    staff_by_store: dict[int, list[int]] = {}

    def hire(title: str, store: int | None, manager: int | None, since: date, salary: float, within_days: int = 0) -> int:
        """Hired on `since` plus up to `within_days` (default: any day until September 2025)."""
        eid = len(employees) + 1
        first, last = person()
        email = f"{ascii_slug(first)}.{ascii_slug(last)}@rayon-cycles.example"
        span = within_days or (date(2025, 9, 1) - since).days
        hired = since + timedelta(days=rng.randrange(0, max(1, span)))
        employees.append((eid, first, last, email, title, store, manager, hired, money(salary)))
        if store is not None and title != "Mechanic":
            staff_by_store.setdefault(store, []).append(eid)
        return eid

    ceo = hire("Chief Executive Officer", None, None, date(2012, 1, 2), 128000, 1)
    directors = {
        "North": hire("Regional Director", None, ceo, date(2013, 1, 1), 84000, 900),
        "South": hire("Regional Director", None, ceo, date(2014, 1, 1), 82000, 900),
    }
    head_online = hire("Head of E-commerce", None, ceo, date(2019, 1, 1), 72000, 365)
    finance = hire("Finance Manager", None, ceo, date(2015, 1, 1), 68000, 365)
    hire("Web Content Editor", None, head_online, date(2020, 1, 1), 38000)
    hire("Accountant", None, finance, date(2016, 1, 1), 41000)
    managers = {}
    for sid, (*_s, opened, region) in enumerate(STORES, 1):
        managers[sid] = hire("Store Manager", sid, directors[region], opened - timedelta(days=60),
                             rng.randrange(46000, 56000, 500), 60)
    for sid, (n_staff, via_assistant) in STORE_STAFF.items():
        opened = STORES[sid - 1][5]
        assistant = None
        if via_assistant:
            assistant = hire("Assistant Store Manager", sid, managers[sid], opened, rng.randrange(36000, 41000, 500), 400)
            n_staff -= 1
        for k in range(n_staff):
            boss = assistant if assistant and k < via_assistant else managers[sid]
            title = "Mechanic" if k % 3 == 2 else ("Senior Sales Associate" if k == 0 else "Sales Associate")
            pay = {"Mechanic": (29000, 34000), "Senior Sales Associate": (30000, 34000)}.get(title, (24500, 29000))
            hire(title, sid, boss, opened, rng.randrange(pay[0], pay[1], 250))
    emit(
        "employees",
        ["employee_id", "first_name", "last_name", "email", "job_title", "store_id", "manager_id", "hire_date", "salary"],
        employees,
    )

    # customers
    city_weights = [w for (*_c, w, _p) in CITIES]
    customers: list[tuple] = []
    emails: set[str] = set()
    for cid in range(1, N_CUSTOMERS + 1):
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        ci = rng.choices(range(len(CITIES)), city_weights)[0]
        base = f"{ascii_slug(first)}.{ascii_slug(last)}"
        email = f"{base}@{rng.choice(EMAIL_DOMAINS)}"
        n = 2
        while email in emails:
            email = f"{base}{n}@{rng.choice(EMAIL_DOMAINS)}"
            n += 1
        emails.add(email)
        phone = None
        if rng.random() < 0.78:
            d = [rng.randrange(10, 100) for _ in range(4)]
            phone = {
                "France": f"+33 {rng.choice('67')} {d[0]} {d[1]} {d[2]} {d[3]}",
                "Belgium": f"+32 4{d[0]} {d[1]} {d[2]} {d[3]}",
                "Switzerland": f"+41 7{rng.choice('689')} {d[0]}{d[1] % 10} {d[2]} {d[3]}",
            }[CITIES[ci][2]]
        street = f"{rng.randrange(1, 140)} {rng.choice(STREETS)}"
        postal = rng.choice(CITIES[ci][4])
        birth = rng.randrange(1945, 2008) if rng.random() < 0.7 else None
        # two thirds were customers before the data starts; the rest sign up along the way
        if rng.random() < 0.65:
            joined = date(2018, 1, 1) + timedelta(days=rng.randrange(0, (FIRST_DAY - date(2018, 1, 1)).days))
        else:
            joined = FIRST_DAY + timedelta(days=rng.randrange(0, (LAST_DAY - FIRST_DAY).days - 20))
        customers.append((cid, first, last, email, phone, street, postal, ci + 1, birth, joined))
    emit(
        "customers",
        ["customer_id", "first_name", "last_name", "email", "phone", "street", "postal_code", "city_id", "birth_year", "joined_on"],
        customers,
    )

    # categories
    cat_id = {name: i for i, (name, _d) in enumerate(CATEGORIES, 1)}
    emit("categories", ["category_id", "name", "department"], [(i, n, d) for i, (n, d) in enumerate(CATEGORIES, 1)])

    # products: each bike model in 2023/2024/2025 or 2024/2025, prices drifting up each year
    products: list[tuple] = []  # (id, name, brand, category_id, model_year, list_price, discontinued)
    for category, brand, model, price in BIKES:
        years = (2023, 2024, 2025) if rng.random() < 0.6 else (2024, 2025)
        for year in years:
            p = price * (1 + 0.04 * (year - 2024))
            p = round(p / 10) * 10 - 1 if p > 300 else p  # 3299-style prices
            products.append((len(products) + 1, f"{brand} {model}", brand, cat_id[category], year, float(p), int(year == 2023)))
    for category, brand, name, price in GEAR:
        products.append((len(products) + 1, name, brand, cat_id[category], None, price, int(name in DISCONTINUED_GEAR)))
    emit(
        "products",
        ["product_id", "name", "brand", "category_id", "model_year", "list_price", "discontinued"],
        products,
    )

    # orders, order_items, payments
    bikes = [p for p in products if p[4] is not None]
    gear = [p for p in products if p[4] is None and p[3] != cat_id["Workshop"]]
    services = [p for p in products if p[3] == cat_id["Workshop"]]
    bike_weight = {cat_id[c]: w for c, w in [("Road Bikes", 4), ("Mountain Bikes", 3), ("Gravel Bikes", 3),
                                              ("City & Folding Bikes", 5), ("Electric Bikes", 4), ("Kids' Bikes", 3)]}
    # Lyon leans electric and city bikes, Marseille mountain: per-city taste for "best in <city>".
    city_taste = {city_id["Lyon"]: cat_id["Electric Bikes"], city_id["Marseille"]: cat_id["Mountain Bikes"],
                  city_id["Bordeaux"]: cat_id["Gravel Bikes"]}

    def sellable(p: tuple, day: date) -> bool:
        year = p[4]
        if year is None:
            return not (p[6] and day.year >= 2025)
        if year == 2023:
            return day < date(2024, 9, 1)
        if year == 2024:
            return date(2023, 9, 1) <= day < date(2025, 10, 1)
        return day >= date(2024, 9, 1)

    # Order dates: seasonal, about 25 % more orders in 2025 than in 2024.
    days = [FIRST_DAY + timedelta(days=d) for d in range((LAST_DAY - FIRST_DAY).days + 1)]
    day_weights = [MONTH_WEIGHT[d.month - 1] * (1.25 if d.year == 2025 else 1.0) * (0.7 if d.weekday() == 6 else 1.0) for d in days]
    order_days = sorted(rng.choices(days, day_weights, k=N_ORDERS))
    # A few regulars buy far more often than the rest (a long tail, as in real shops).
    cust_weight = [min(rng.paretovariate(1.8), 12.0) for _ in customers]
    store_in_city = {}
    for sid, cid in store_city.items():
        store_in_city.setdefault(cid, []).append(sid)
    store_ids = list(STORE_WEIGHT)

    orders: list[tuple] = []
    items: list[tuple] = []
    payments: list[tuple] = []
    for oid, day in enumerate(order_days, 1):
        while True:
            cust = rng.choices(customers, cust_weight)[0]
            if cust[9] <= day:
                break
        home = cust[7]
        if home in store_in_city and rng.random() < 0.9:
            store = rng.choice(store_in_city[home])
        else:
            store = rng.choices(store_ids, [STORE_WEIGHT[s] for s in store_ids])[0]
        online = rng.random() < (0.3 if day.year == 2024 else 0.38)
        if online and store_city[store] != home:
            store = 1  # the Bastille store ships web orders from outside store cities
        seller = None
        if not online:  # anyone on the shop floor who had been hired by then
            seller = rng.choice([e for e in staff_by_store[store] if employees[e - 1][7] <= day])

        # lines: a bike (plus extras) in about a third of orders, else gear and workshop jobs
        lines: list[tuple[tuple, int]] = []
        if rng.random() < 0.32:
            pool = [p for p in bikes if sellable(p, day)]
            taste = city_taste.get(store_city[store])
            weights = [bike_weight[p[3]] * (3 if p[3] == taste else 1) / (1 + p[5] / 2500) for p in pool]
            lines.append((rng.choices(pool, weights)[0], 1))
            for extra in rng.sample([p for p in gear if sellable(p, day)], rng.choice([0, 1, 1, 2, 3])):
                lines.append((extra, 1))
        else:
            n = rng.choice([1, 1, 1, 2, 2, 3, 4])
            pool = [p for p in gear if sellable(p, day)]
            if not online and rng.random() < 0.3:
                lines.append((rng.choice(services), 1))
                n -= 1
            for p in rng.sample(pool, n):
                qty = rng.choice([1, 1, 1, 2, 2, 4]) if p[5] < 20 else (rng.choice([1, 1, 1, 2]) if p[5] < 60 else 1)
                lines.append((p, qty))
        promo = (day.month == 11 and day.day >= 24) or (day.month == 1 and rng.random() < 0.5)  # Black Friday, sales
        total = 0.0
        for line_no, (p, qty) in enumerate(lines, 1):
            if promo:
                discount = rng.choice([0.1, 0.15, 0.2])
            elif p[4] is not None and p[4] < day.year:
                discount = rng.choice([0.1, 0.15, 0.2, 0.25])  # last year's model
            else:
                discount = rng.choice([0, 0, 0, 0, 0, 0, 0.05, 0.1])
            if p[3] == cat_id["Workshop"]:
                discount = 0
            items.append((oid, line_no, p[0], qty, p[5], discount))
            total += qty * p[5] * (1 - discount)
        total = money(total)

        # status from the order's age at LAST_DAY: old orders are delivered (or cancelled),
        # the last weeks hold every stage; a handful of older ones wait for back-ordered parts.
        age = (LAST_DAY - day).days
        r = rng.random()
        if r < 0.03:
            status = "cancelled"
        elif age > 21:
            status = "processing" if r > 0.995 else "delivered"
        elif age <= 3:
            status = rng.choice(["pending", "pending", "processing"])
        elif age <= 10:
            status = rng.choice(["pending", "processing", "shipped", "shipped"])
        else:
            status = rng.choice(["processing", "shipped", "delivered", "delivered"])
        shipped = None
        if status in ("shipped", "delivered"):
            lag = rng.randrange(1, 4) if online else (rng.randrange(0, 6) if lines[0][0][4] else 0)
            shipped = min(day + timedelta(days=lag), LAST_DAY)
        orders.append((oid, cust[0], store, seller, "online" if online else "in_store", status, day, shipped))

        # payments
        if status == "cancelled" or (status == "pending" and online and rng.random() < 0.6):
            continue
        if total > 2500 and age > 90 and rng.random() < 0.35:
            parts = [money(total / 3)] * 2
            parts.append(money(total - sum(parts)))
            for k, amount in enumerate(parts):
                payments.append((len(payments) + 1, oid, day + timedelta(days=30 * k), amount, "financing"))
            continue
        if total > 40 and rng.random() < 0.06:
            gift = float(rng.choice([25, 50, 100]))
            if gift < total:
                payments.append((len(payments) + 1, oid, day, gift, "gift_card"))
                total = money(total - gift)
        if online:
            method = rng.choices(["card", "paypal", "bank_transfer"], [70, 25, 5])[0]
        else:
            method = rng.choices(["card", "cash", "bank_transfer"], [85, 12, 3])[0]
        paid_on = day + timedelta(days=rng.randrange(1, 5)) if method == "bank_transfer" else day
        payments.append((len(payments) + 1, oid, min(paid_on, LAST_DAY), total, method))

    emit(
        "orders",
        ["order_id", "customer_id", "store_id", "employee_id", "channel", "status", "order_date", "shipped_date"],
        orders,
    )
    emit("order_items", ["order_id", "line_no", "product_id", "quantity", "unit_price", "discount"], items)
    emit("payments", ["payment_id", "order_id", "paid_on", "amount", "method"], payments)

    total_rows = sum(counts.values())
    header = (
        "-- Rayon Cycles: the routesh demo database, a fictional chain of eight bicycle shops in France.\n"
        f"-- Generated by tools/demo_sql.py (seed {SEED}); edit the generator, not this file.\n"
        f"-- Orders from {FIRST_DAY} to {LAST_DAY}; prices in EUR. All people, e-mail addresses and\n"
        "-- phone numbers are made up.\n"
        f"-- {len(counts)} tables, {total_rows} rows: "
        + ", ".join(f"{t} {n}" for t, n in counts.items())
        + ".\n\n"
        "PRAGMA foreign_keys = ON;\n\n"
        "BEGIN;\n\n"
    )
    return header + SCHEMA + "\n" + "\n".join(sections) + "\nCOMMIT;\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if demo.sql is out of date")
    args = parser.parse_args(argv)
    text = generate()
    if args.check:
        same = OUT.exists() and OUT.read_text(encoding="utf-8") == text
        print("demo.sql is up to date" if same else "demo.sql is out of date: run python tools/demo_sql.py")
        return 0 if same else 1
    OUT.write_text(text, encoding="utf-8", newline="\n")
    print(f"wrote {OUT} ({OUT.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
