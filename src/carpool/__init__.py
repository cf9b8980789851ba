"""carpool: a highly available load-balancer pair."""
