"""The HTTP edge both servers share, written once.

``asgi`` types the ASGI messages and holds the body reader (size limit, disconnect) and the
responder; ``sse`` relays an upstream event stream (client departures, upstream breaks);
``client`` is the keep-alive HTTP/1.1 client both servers call their upstreams with,
and ``failures`` the one family of transport errors it raises; ``protocol``
bounds what a client can make a server buffer or wait for before the ASGI app runs
(request line, header block, header count, header and body read timeouts); ``nesting``
measures how deep a JSON document nests without a recursive parser, so that recursive
parsers (GJSON) only ever see documents of bounded depth.
"""
