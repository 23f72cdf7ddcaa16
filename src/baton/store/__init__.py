"""Domain operations over the engine seam: each is `async def op(conn, ...)` running inside one
transaction, so every state change is one statement or one transaction, on every engine."""
