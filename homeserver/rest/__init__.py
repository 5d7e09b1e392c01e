"""HTTP resources: each module parses and authenticates requests, then calls handlers.

Every module listed in API_MODULES provides:

    def install(ctx: HomeServerContext, router: Router) -> None
        registers its routes (on every process);

and may provide:

    def write_operations(ctx: HomeServerContext) -> list[WriteOperation]
        the writes it performs on a stream's writer; called only on processes that write
        at least one stream, and only the operations of streams this process writes are
        served. Other processes forward them to the writer.
"""

API_MODULES: tuple[str, ...] = (
    "homeserver.rest.accounts",
    # Before rooms: installs ctx.extras["directory"] (alias resolution) for the modules after it.
    "homeserver.rest.directory",
    "homeserver.rest.rooms",
    "homeserver.rest.sync",
    "homeserver.rest.filters",
    "homeserver.rest.relations",
    "homeserver.rest.server_info",
    "homeserver.rest.typing",
    "homeserver.rest.receipts",
    "homeserver.rest.presence",
    "homeserver.rest.account_data",
    "homeserver.rest.to_device",
    "homeserver.rest.devices",
    "homeserver.rest.keys",
)
