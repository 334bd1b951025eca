return reserve(KEYS, ARGV)
