-- An agent who is away takes no transfers and does not count as online for customers; the
-- dashboard sets it (PATCH /api/staff/me).
ALTER TABLE staff ADD COLUMN away INTEGER NOT NULL DEFAULT 0;
