"""Framework integrations: Django (`baton.contrib.django`), ASGI servers such as FastAPI and
Starlette (`baton.contrib.asgi`) and Flask (`baton.contrib.flask`). Each is an optional extra."""
