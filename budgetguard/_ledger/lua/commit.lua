return resolve('committed')
