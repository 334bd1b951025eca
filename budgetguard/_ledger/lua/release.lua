return resolve('released')
