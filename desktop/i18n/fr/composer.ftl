# La zone de saisie sous le fil.

composer-label = Votre message
composer-hint = Écrivez un message… (Entrée pour envoyer, Maj+Entrée pour aller à la ligne)
composer-send = Envoyer
composer-sending = envoi…
composer-retry = Renvoyer
composer-edit = Modifier
composer-closed = Vous ne faites plus partie de cette conversation : vous pouvez lire son historique, mais plus y écrire.
composer-size = { $bytes } / { $max } octets
composer-error-too-long = Ce message est trop long. Raccourcissez-le ou envoyez-le en plusieurs fois.
composer-error-left = Vous ne faites plus partie de cette conversation.
composer-error-too-many-pending = Trop de messages attendent d'être envoyés. Patientez, puis réessayez.
error-send-not-connected = Non envoyé : Relais n'est pas connecté au relais. Renvoyez-le une fois la connexion rétablie.
error-send-interrupted = La connexion a été coupée pendant l'envoi : le message partira peut-être de lui-même à la reconnexion. Vérifiez auprès de votre correspondant avant de le renvoyer.
