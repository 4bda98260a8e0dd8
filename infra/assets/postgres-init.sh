#!/bin/sh
# PostgreSQL first start (compose mounts this into /docker-entrypoint-initdb.d): one login role
# per kind of Veil process, each with its own password, and the database owned by veil_owner,
# who runs the migrations (0008_roles.sql finds the roles and grants per table). The superuser
# of POSTGRES_USER is used only here, never by Veil.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres <<SQL
CREATE ROLE veil_owner LOGIN PASSWORD '$VEIL_PG_OWNER_PASSWORD';
CREATE ROLE veil_producer LOGIN PASSWORD '$VEIL_PG_PRODUCER_PASSWORD';
CREATE ROLE veil_worker LOGIN PASSWORD '$VEIL_PG_WORKER_PASSWORD';
CREATE ROLE veil_retention LOGIN PASSWORD '$VEIL_PG_RETENTION_PASSWORD';
CREATE ROLE veil_operator LOGIN PASSWORD '$VEIL_PG_OPERATOR_PASSWORD';
CREATE DATABASE veil OWNER veil_owner;
SQL
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname veil \
    -c "ALTER SCHEMA public OWNER TO veil_owner"
