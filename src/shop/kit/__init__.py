"""The shop's infrastructure: settings, clock, money, errors, the database and the embedded
server, documents, pagination, observability and metrics, middleware, the HTTP server's
protocol and the API docs. It imports no domain: the domains and the composition root import
it."""
