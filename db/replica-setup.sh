#!/bin/sh
# The compose profile `replica`: makes mysql-replica a replica of mysql with the servers' own
# replication. Copies the database as of a binlog position (mysqldump --master-data) and
# replicates from there. Runs once; a replica already set up is left as it is.
set -eu
root="-uroot -p${MYSQL_ROOT_PASSWORD}"
primary="mysql -h mysql $root"
replica="mysql -h mysql-replica $root"

for host in mysql mysql-replica; do
  until mysqladmin -h "$host" $root ping --silent 2>/dev/null; do sleep 1; done
done
if [ -n "$($replica -N -e 'SHOW SLAVE STATUS')" ]; then
  echo "mysql-replica already replicates mysql"
  exit 0
fi

# MySQL 8.0 signs in its replicas with caching_sha2_password: it must send its public key.
case "$($primary -N -e 'SELECT VERSION()')" in
  *MariaDB*) key='' ;;
  *) key=', GET_MASTER_PUBLIC_KEY = 1' ;;
esac
# The source first: a CHANGE MASTER naming a host forgets the binlog position, which the dump sets.
$replica -e "CHANGE MASTER TO MASTER_HOST = 'mysql', MASTER_PORT = 3306, MASTER_USER = 'root', MASTER_PASSWORD = '${MYSQL_ROOT_PASSWORD}'${key}"
mysqldump -h mysql $root --single-transaction --master-data=1 --databases "${MYSQL_DATABASE}" | $replica
$replica -e 'START SLAVE'
echo "mysql-replica replicates mysql"
