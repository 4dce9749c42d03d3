-- Webhook deliveries no longer keep the receiver's answer (issue 9, item 9):
-- a receiver, or whoever answers at its address, must not write text into
-- jitgate's database and CLI. Errors recorded before kept up to 200 bytes of
-- the body after the status ("the receiver answered 502 Bad Gateway: <body>");
-- keep the status only. (A status text never holds ": ".)
UPDATE outbox SET last_error = substr(last_error, 1, instr(last_error, ': ') - 1)
WHERE last_error LIKE 'the receiver answered %: %';
