return resolve('committed', KEYS, ARGV)
