-- Compact an ended call's event stream (log.lua's compact_log): the store's Python paths that end a call.
-- KEYS: the call's event stream.
return compact_log(KEYS[1])
