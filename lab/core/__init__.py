"""The foundation every layer imports: errors, statistics, precisions, statuses."""
