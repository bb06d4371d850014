"""Where images come from: folders, lists, object-store prefixes, tar shards."""
