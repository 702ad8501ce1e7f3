"""The HTTP edge both servers share, written once.

``asgi`` types the ASGI messages and holds the body reader (size limit, disconnect) and the
responder; ``sse`` relays an upstream event stream (client departures, upstream breaks);
``failures`` is the one family of transport errors an upstream call raises; ``protocol``
bounds what a client can make a server buffer or wait for before the ASGI app runs
(request line, header block, header count, header and body read timeouts); ``nesting``
measures how deep a JSON document nests without a recursive parser, so that recursive
parsers (GJSON) only ever see documents of bounded depth.
"""
