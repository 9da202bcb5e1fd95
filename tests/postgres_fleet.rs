//! PostgresStore at the store level (placeholder replaced below).
