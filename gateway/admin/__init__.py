"""What admins do, shared by the `tollgate` command and the /admin API: keys, budgets, spend,
policy rules, and the accounts (keys and budgets) a running gateway holds."""
