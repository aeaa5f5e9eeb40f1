"""A PostgreSQL database of one's own (CREATE DATABASE through an admin URL), dropped at the end,
so concurrent runs and the shared server never see each other's rows."""

import subprocess
import uuid


class Database:
    def __init__(self, admin_url, prefix="orderkit"):
        self.admin_url = admin_url.rstrip("/")
        self.name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        base = self.admin_url.rsplit("/", 1)[0]
        self.url = f"{base}/{self.name}"

    def create(self):
        subprocess.run(["psql", "-q", "-d", self.admin_url, "-c", f'CREATE DATABASE "{self.name}"'], check=True)
        return self

    def drop(self):
        subprocess.run(["psql", "-q", "-d", self.admin_url, "-c", f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'],
                       check=False)

    def __enter__(self):
        return self.create()

    def __exit__(self, *exc):
        self.drop()
