-- How a bastion session reaches its target: 'tunnel' (a client's raw TCP
-- stream: jitgate connect, jitgate ssh) or 'terminal' (the browser terminal:
-- the server's own SSH client logs in, as login).
ALTER TABLE sessions ADD COLUMN via TEXT NOT NULL DEFAULT 'tunnel';
ALTER TABLE sessions ADD COLUMN login TEXT NOT NULL DEFAULT '';
