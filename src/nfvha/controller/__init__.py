"""The controller: inventory, fault records, recovery, notifications, REST API."""
