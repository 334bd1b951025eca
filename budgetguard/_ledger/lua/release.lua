return resolve('released', KEYS, ARGV)
