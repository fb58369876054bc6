//! Non-interactive report of a session (block grids, viuer, PNG export).
