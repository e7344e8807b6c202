-- Inbound routes may admit partners only from the networks they list (JSON array of
-- canonical CIDRs; NULL: any address).
ALTER TABLE inbound_routes ADD COLUMN allowed_ips TEXT;
